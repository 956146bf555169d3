//! Continuous evaluation: labels joined to payload samples, and windowed quality metrics.
