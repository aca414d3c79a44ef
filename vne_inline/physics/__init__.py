"""Physics: T1 relaxation, inversion recovery and tissue constants (pure numpy)."""
