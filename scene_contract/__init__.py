"""What training and serving agree on, with nothing but the standard library and numpy.

`scene_contract.model` names the exported model's tensors and tasks;
`scene_contract.card` is its model card, one typed object written and read;
`scene_contract.drawing` turns labels and depth into colours. Both sides import this
package; it imports neither of them (see docs/architecture.md).
"""
