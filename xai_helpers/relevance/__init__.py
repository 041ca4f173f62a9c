"""Layer-wise relevance propagation's machinery, split as zennit splits it:

================  ==================================================================================
``rules``         how relevance passes a linear layer: LRP-0, epsilon, gamma, z+, alpha-beta, z^B
``composites``    which rule each layer gets: :class:`~xai_helpers.relevance.composites.Composite`,
                  ``uniform``, ``epsilon_gamma_box``
``canonizers``    batch norm merged into the preceding layer for the duration
``hooks``         what applies a composite to a model: ``relevance_rules``, ``check_propagatable``
================  ==================================================================================

The methods that use it (LRP, DeepLIFT) are in :mod:`xai_helpers.methods.propagation`. Import each
name from its module; this package itself re-exports nothing (one path per name).
"""
