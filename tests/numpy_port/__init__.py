"""An independent numpy port (controller, lens supervision, GistNet, TinyGPT, lens-gated
attention and block) written from the vector files' definitions, and its checker (contract
§17)."""
