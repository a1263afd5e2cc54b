"""Pure decisions: sizing, placement, scaling policy, desired child objects and conditions.

Inputs are the spec, observed state and `now`; outputs are plans and desired objects.
Nothing here imports kopf, a Kubernetes client or does IO (enforced by .importlinter).
"""
