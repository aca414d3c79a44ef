"""Thin adapters around the core: Gadgetron external gadget, MRD v1 server, offline replay."""
