"""The networks: hosts, blueprints and the policy network (nn.Module classes).

They live in the shell, not the core: a module holds mutable parameters, a train/eval mode and
(dropout) random draws. Their `forward` is still a function of parameters and inputs, usable with
`torch.func.functional_call`; each draws randomness only from a generator it is given.
"""
