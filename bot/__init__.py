"""The runnable flowagents bot: `python -m bot`."""
