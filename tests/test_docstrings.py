"""What `help()` shows users: the documented public classes describe every field, and
`focus_step` lists what it raises (reference documentation, checked so it cannot drift)."""

import dataclasses

import pytest

import megacontext as mc


@pytest.mark.parametrize("cls", [mc.MCConfig, mc.WorkingContext])
def test_every_field_is_described_in_the_class_docstring(cls):
    """Each dataclass field appears, at the start of a line, in the class docstring."""
    doc = cls.__doc__ or ""
    lines = [ln.strip() for ln in doc.splitlines()]
    missing = [f.name for f in dataclasses.fields(cls)
               if not any(ln.startswith(f.name + " ") for ln in lines)]
    assert not missing, f"{cls.__name__} docstring does not describe {missing}:\n{doc}"


def test_mcconfig_docstring_states_every_default():
    doc = mc.MCConfig.__doc__
    for f in dataclasses.fields(mc.MCConfig):
        assert repr(f.default).strip("'") in doc, (f.name, f.default)


@pytest.mark.parametrize("obj", [mc.LensNet, mc.GistNet, mc.MegaContextTree, mc.render_lod_map])
def test_public_model_classes_and_the_lod_map_have_docstrings(obj):
    """A docstring of its own (not inherited from nn.Module), naming its contract section."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    assert doc and "contract §" in doc, obj


def test_focus_step_lists_what_it_raises():
    doc = mc.focus_step.__doc__
    assert "Raises" in doc
    for name in ("InputTypeError", "InputError", "LevelError", "AlignmentError",
                 "ContiguityError", "CoverageError", "TailError"):
        assert name in doc, name
