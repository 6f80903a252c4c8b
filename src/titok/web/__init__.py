"""The web demo (``titok web``): reconstruct, look at and edit the 32 tokens, generate by class.

``models.py`` holds the one tokenizer and the one generator that every request shares,
``actions.py`` what the page does with them (plain functions, tested without a browser) and
``app.py`` the Gradio page; only ``app.py`` imports Gradio (the ``web`` extra).
"""
