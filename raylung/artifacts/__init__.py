"""What happens to a model after training: checkpoints, exports and their formats, loading,
inference, evaluation, prediction and metrics.

Nothing here depends on Ray or on the training code: a user with an export folder and this
package can evaluate, predict and explain on any machine.
"""
