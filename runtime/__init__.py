"""Instrumented ``autocast`` and ``GradScaler`` that check AMP usage at run time."""
