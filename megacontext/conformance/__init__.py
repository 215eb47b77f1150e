"""Language-neutral conformance vectors (contract §17): generators of golden/vectors/*.json."""
