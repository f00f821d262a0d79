"""Training: config tree (config.py), lr schedule, resumable distributed sampling, the Trainer,
checkpoints, torchrun set-up, losses (Charbonnier, perceptual, DCL) and the `rainmamba train` verb.

Nothing is imported here so `import rainmamba_core.train.config` stays light; see docs/training.md.
"""
