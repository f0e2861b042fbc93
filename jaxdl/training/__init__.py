"""Training machinery shared by every task: state, devices, loop, checkpoints."""
