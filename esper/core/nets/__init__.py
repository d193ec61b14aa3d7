"""Model definitions of the pure core: hosts, blueprints, the policy network (nn.Module classes)."""
