"""translog"""
