"""Where metrics go: JSON lines and TensorBoard."""
