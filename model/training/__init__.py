"""Fine-tuning through the [SEG] path: examples, trainable parameters, optimizers, checkpoints and the loop."""
