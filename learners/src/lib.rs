//! Base learners, stacking and the federated MLP meta-model of the fedrad nested cross-validation.
