"""Training: the Hydra config schema, Composer model wrappers and the builders the
pretraining and GLUE entry points share."""
