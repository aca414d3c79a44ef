"""Physics-based synthetic HCM exams with ground truth (demo, tests, default weights)."""
