"""kgreport: grounded radiology report drafting.

This package is the ground floor under the layers (`retrieval`, `knowledge`, `indexing`, `generator`,
`api`): what every one of them may import, and which imports none of them (`kgreport.errors`).
"""
