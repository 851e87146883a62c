"""Training a Whisper model: hyperparameters, the model and its pretrained weights (with the CTranslate2 file
format they ship in), log-mel features, the block trainer (faults, rollback, checkpoints) and memory habits."""
