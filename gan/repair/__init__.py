"""Video repair: fill damaged regions of clips so they look sharp and stay temporally consistent."""
