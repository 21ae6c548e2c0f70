"""Training: data readers, synthetic scenes, prompt simulation, losses and the loop."""
