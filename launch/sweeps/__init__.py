"""The sweep system: `plan` turns a sweep config into stage runs, `report` aggregates them.

`python -m launch.sweep` runs a plan locally or as pod jobs; the sweep configs live in
configs/sweeps/.
"""
