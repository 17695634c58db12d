"""http/kit"""
