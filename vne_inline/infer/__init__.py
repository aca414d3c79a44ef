"""Inference backends behind one interface: numpy in, numpy out."""
