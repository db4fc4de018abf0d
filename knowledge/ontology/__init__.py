"""Medical ontology: RadLex terms and Open Imaging Finding Models, read from files and loaded into the graph."""
