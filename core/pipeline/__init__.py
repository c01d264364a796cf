"""The model pipeline training fits and serving loads: cleaning, features, the booster
wrapper with its calibration and reasons, and the model store that keeps them together."""
