"""Explanations: why a post is where it is for a viewer, and what limited a post's reach.

:func:`explain_post` takes one viewer's ranking apart for one post: each predicted action's
share of its score, the signals (SHAP values of the XGBoost models) behind the largest ones,
and every rule that acted on it, in plain sentences. :func:`explain_reach` answers the seeds'
"shadowbanning" question for a creator's post: how many of its audience would have it in their
top k, and how many more would without each rule.

Example
-------
>>> from toolkit.explain import explain_post, explain_reach
>>> why = explain_post("data/feedlab.duckdb", "explore", 17, 4711)  # doctest: +SKIP
>>> print("\\n".join(why["sentences"]))  # doctest: +SKIP
>>> explain_reach("data/feedlab.duckdb", "feed", 812)["by_rule"][:2]  # doctest: +SKIP
"""

from toolkit.explain.explain import explain_post, explain_reach
from toolkit.explain.shap import post_features, post_shap, shap_frame

__all__ = ["explain_post", "explain_reach", "post_features", "post_shap", "shap_frame"]
