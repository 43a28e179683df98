"""Fine-tuning through the [SEG] path: examples, losses, trainable parameters, the objective, checkpoints, loop."""
