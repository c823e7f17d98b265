"""Description pools for TextSpan head analysis (one short description per line; `#` starts a
comment line). Written for this project; see medclipsvd.interpret.descriptions."""
