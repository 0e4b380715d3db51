"""Experiment harnesses the scripts share; nothing in the library imports them. `transfer`: pretrain once,
fine-tune or probe over seeds, mean, spread and paired differences; `lion_convergence`: compressed Lion on
a small MLP; `mup_coords`: muP's coordinate check."""
