"""The dialogue markers of the hh-rlhf text format, defined once.

A transcript is `\\n\\nHuman: ...\\n\\nAssistant: ...` repeated; a context ends with
ASSISTANT and a reply starts with a space. The tokenizer makes each marker one piece, the
readers split on them, the generators write them: all of them import these two strings.
"""
HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
