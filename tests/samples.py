"""Small sources the tests of the run paths share (each test module states its own cases)."""

#: A scaled backward inside the autocast region: one AMP001 at row 6, nothing else.
BACKWARD_IN_AUTOCAST = (
    "import torch\n"
    "scaler = torch.amp.GradScaler()\n"
    "for x in loader:\n"
    "    with torch.autocast('cuda'):\n"
    "        loss = model(x)\n"
    "        scaler.scale(loss).backward()\n"
    "    scaler.step(opt)\n"
    "    scaler.update()\n"
)
