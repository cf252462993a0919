"""Joint generation: one generator draws a shape's image and the log-mel spectrogram of its sound."""
