"""What training and serving agree on, with nothing but the standard library and numpy.

`scene_contract.model` names the exported model's tensors and parses its model card;
`scene_contract.drawing` turns labels and depth into colours. Both sides import this
package; it imports neither of them (see docs/architecture.md).
"""
