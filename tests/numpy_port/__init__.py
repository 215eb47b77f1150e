"""An independent numpy port of the controller and its vector checker (contract §17)."""
