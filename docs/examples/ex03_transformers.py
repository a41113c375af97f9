"""
An ordinal loss for the Hugging Face Trainer
============================================

A tiny BERT built from a config (random weights, nothing downloaded) learns an ordinal text task:
the label is how many of 8 tokens are token 7 (0, 1, 2 or 3+). ``ordinal_loss_func("emd2")`` is
the ``compute_loss_func`` (normalised by ``num_items_in_batch``, so gradient accumulation is
exact) and ``ordinal_compute_metrics`` the ``compute_metrics``.
"""

import tempfile

import torch
import transformers

from emdloss.integrations.transformers import ordinal_compute_metrics, ordinal_loss_func

C = 4
torch.set_num_threads(2)
transformers.logging.set_verbosity_error()


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(8, 50, (n, 8), generator=g)
        for i, k in enumerate(torch.randint(0, C, (n,), generator=g).tolist()):
            self.ids[i, torch.randperm(8, generator=g)[:k]] = 7
        self.labels = (self.ids == 7).sum(1).clamp_max(C - 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


transformers.set_seed(0)
config = transformers.BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
    num_labels=C,
)
model = transformers.BertForSequenceClassification(config)
loss_func = ordinal_loss_func("emd2", num_classes=C)

with tempfile.TemporaryDirectory() as out:
    trainer = transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=16,
            gradient_accumulation_steps=2,
            num_train_epochs=8,
            learning_rate=1e-2,
            logging_steps=3,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
        ),
        train_dataset=Tokens(96, 0),
        eval_dataset=Tokens(64, 1),
        compute_loss_func=loss_func,
        compute_metrics=ordinal_compute_metrics(C),
        callbacks=[loss_func.callback()],
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()

# %%
# Evaluation before and after training (64 held-out sequences; median rule).
for key in ("eval_loss", "eval_accuracy", "eval_mae", "eval_qwk", "eval_one_off_accuracy"):
    print(f"{key:22s} {before[key]:.3f} -> {after[key]:.3f}")
