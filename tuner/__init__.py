"""dtune's tuner: per-task Optuna studies over the decoder's knobs, tracked in MLflow, exported as profiles.

Data flows one way: task → prompts → decoder → completions → scorer → metrics → study → tracking / profile.
`python -m tuner --help` lists the commands.
"""

__version__ = "0.1.0"
