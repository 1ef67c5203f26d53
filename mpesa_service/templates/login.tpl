% rebase('layout', title='Sign in')
<h2>Sign in</h2>
<form method="post" action="/console/login">
  <label>Operator API key <input type="password" name="key" autocomplete="off" size="40" required></label>
  <button type="submit">Sign in</button>
</form>
