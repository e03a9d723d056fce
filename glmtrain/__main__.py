"""``python -m glmtrain``, which ``accelerate launch -m glmtrain run ...`` uses."""

from glmtrain.cli import main

main()
