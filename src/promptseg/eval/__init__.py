"""Evaluation: the interactive protocols (1 click, box, NoC) and the SAM paper's zero-shot tasks
(edges, proposals, instances), with the datasets they read."""
