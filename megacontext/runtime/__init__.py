"""The runtime loop (contract §11), counterfactual labels (§12) and telemetry (§14)."""
