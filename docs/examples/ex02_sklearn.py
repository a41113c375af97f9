"""
EMDClassifier in a scikit-learn pipeline and grid search
========================================================

An ordinal table (skordinal's LEV: 4 features, 5 ordered classes), one stratified 75/25 split
(seed 0). ``EMDClassifier`` is fitted in a ``Pipeline`` beside ``LogisticRegression``; then a
``GridSearchCV`` picks the loss and the learning rate by cross-validated negative MAE on the
training part only, and the chosen model is scored once on the held-out part.
"""

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skordinal.datasets import load_lev

from emdloss.sklearn import EMDClassifier

torch.set_num_threads(1)
data = load_lev()
X, y = np.asarray(data.data, dtype=float), np.asarray(data.target)
X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)

# prediction_rule="median": the MAE-optimal rule (the default, "argmax", is scikit-learn's)
emd = make_pipeline(
    StandardScaler(), EMDClassifier("emd2", prediction_rule="median", random_state=0)
)
emd = emd.fit(X_tr, y_tr)
logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
print(f"EMDClassifier(emd2)  test MAE {mean_absolute_error(y_te, emd.predict(X_te)):.3f}")
print(f"LogisticRegression   test MAE {mean_absolute_error(y_te, logreg.predict(X_te)):.3f}")

# %%
# The median rule at work: the same probabilities decoded by argmax give a different MAE.
clf = emd[-1]
_ = clf.set_params(prediction_rule="argmax")
print(f"EMDClassifier, argmax rule: test MAE {mean_absolute_error(y_te, emd.predict(X_te)):.3f}")
_ = clf.set_params(prediction_rule="median")

# %%
# Model selection on the training part only (3-fold CV of negative MAE).
grid = GridSearchCV(
    make_pipeline(StandardScaler(), EMDClassifier(max_iter=50, random_state=0)),
    {"emdclassifier__loss": ["emd2", "ce"], "emdclassifier__learning_rate": [1e-3, 1e-2]},
    cv=3,
).fit(X_tr, y_tr)
for params, score in zip(
    grid.cv_results_["params"], grid.cv_results_["mean_test_score"], strict=True
):
    print(f"{params}  CV MAE {-score:.3f}")
print("chosen:", grid.best_params_, f"test MAE {-grid.score(X_te, y_te):.3f}")
