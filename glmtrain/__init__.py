"""glmtrain: fine-tune GLM-4 with LoRA on data glmdata validated.

A thin layer over TRL's ``SFTTrainer``, PEFT and SwanLab's transformers integration: glmdata
renders and masks the rows, glmtrain checks them before any weights load, and the libraries train.
Nothing heavy is imported here; see ``glmtrain.cli`` for the command and ``glmtrain.train`` for the API.
"""

__version__ = "0.1.0"
