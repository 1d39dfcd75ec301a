"""One module per rule, named for its code and what it forbids."""
