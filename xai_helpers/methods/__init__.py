"""The attribution methods, one module per family of ideas:

================  ==================================================================================
``cam``           Grad-CAM and the CAM family (Grad-CAM++, HiResCAM, LayerCAM, Score-CAM)
``gradients``     saliency, deconvnet, guided backprop, guided Grad-CAM, SmoothGrad
``integrated``    Integrated Gradients: quadratures, completeness, tolerance mode
``perturbation``  occlusion
``propagation``   gradient x input, LRP, DeepLIFT (the rules of LRP are in :mod:`xai_helpers.relevance`)
================  ==================================================================================

Each method registers itself with :func:`xai_helpers.registry.register` when its module is
imported, and :func:`xai_helpers.registry.methods` imports every module of this package, found with
``pkgutil.iter_modules``: a method in a new module here needs nothing but its decorator. Import a
method from its module, ``from xai_helpers.methods.cam import grad_cam``; this package itself
re-exports nothing (one path per name).
"""
