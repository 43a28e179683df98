"""Recipes built on the library (proof of learning, the offline demo model); the library never imports them."""
