"""The reference trainer's surface: components, the nested ``TrainingConfig`` and its YAML,
and losses written in the reference trainer's signature."""
