"""The OpenEnv server over the same episode: ``python -m sttrl.openenv serve`` serves sttrl with openenv-core's app
factory (``create_app``): typed models (:mod:`sttrl.openenv.models`), one episode per WebSocket session
(:mod:`sttrl.openenv.environment`, a :class:`~sttrl.env.session.EpisodeSession`), the app and its error mapping
(:mod:`sttrl.openenv.server`) and the typed client (:mod:`sttrl.openenv.client`, an OpenEnv ``EnvClient``).
``openenv.yaml`` and ``Dockerfile`` beside this file describe the deployment. Needs the ``openenv`` extra."""
