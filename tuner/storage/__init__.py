"""The study database: what a study stores (its typed record) and Optuna's storage made fit for many workers."""
