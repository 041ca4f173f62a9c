"""Stand-in for Colab's ``google.colab`` module in the simulated Colab start (tests/colab).

Colab imports ``google.colab`` when its kernel starts; the book's setup cell looks for it in
``sys.modules`` to decide whether to install xai_helpers. Nothing else is simulated.
"""
