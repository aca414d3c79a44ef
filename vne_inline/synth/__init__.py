"""Physics-based synthetic HCM exams with ground truth (demo, tests, default weights).

patient (parameters drawn from (seed, index)) -> anatomy (heart + torso, one analytic 3-D anatomy)
-> planning (each scan's planes) -> sampling (partial volume on a plane) -> contrast (tissue signal
models) -> acquisition (k-space resolution, noise, ghosts) -> scans (cine, T1 mapping with the fitted
map, LGE) -> export (ISMRMRD files) and truth (truth.h5) -> exam (one or many patients).

Entry points: `exam.generate_patient`, `exam.generate_exams`, `truth.read_truth`; CLI `vne-inline synth`.
"""
