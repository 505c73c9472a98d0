"""Method experiments built from medseg's parts (CMMC first): analysis tables now, the end-to-end runners next."""
